#!/usr/bin/env python3
"""Label Studio's own JSON export of every project of a database, as its UI's Export button does it.

Run with the python of a virtualenv holding label-studio (1.23.2), never the project's::

    python -m venv /work/ls-venv && /work/ls-venv/bin/pip install label-studio==1.23.2
    /work/ls-venv/bin/python bench/ls_export_runner.py --db COPY.sqlite3 --out DIR [--data-dir DIR]

The Export button of Label Studio 1.23.2's project page (``ExportPage`` in its frontend, API
call ``exportRaw``) sends ``GET /api/projects/<id>/export?exportType=JSON`` and saves the body.
This script sends that same request through Django's test client, so Label Studio's URL routing,
middleware, session authentication, ``data_export.api.ExportAPI`` (tasks with at least one
annotation row, cancelled ones included, serialized by ``ExportDataSerializer`` with drafts
expanded, in batches of 1000), ``DataExport.generate_export_file`` (``json.dumps``, the copy
Label Studio keeps under its ``export/`` directory, label-studio-sdk's ``Converter``) and the
``FileResponse`` all run as in the server; only the socket is missing. The response body is
written unchanged to ``DIR/project-<id>.json``.

Label Studio writes to the database it is given (the session of the logged-in user, the user's
last activity), so give it a copy. It also writes its export files and a secret key under
``--data-dir`` (default: a directory next to the output). The database must already be at
1.23.2's schema (bench/gen_db.py's are): migrations are checked, not run.

The last line of stdout is JSON: per project the file, its bytes and the request's seconds;
the seconds of Django's start-up and of all the requests. (Tasks are not counted here: parsing
the files would add to the time and memory measured of this process.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, required=True, help="a COPY of the Label Studio SQLite database")
    ap.add_argument("--out", type=Path, required=True, help="directory for project-<id>.json")
    ap.add_argument("--data-dir", type=Path, help="Label Studio's data directory (default: OUT.ls-data)")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    data_dir = (a.data_dir or a.out.with_name(a.out.name + ".ls-data")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    # The environment `label-studio start --data-dir DIR` would give it, on SQLite, less the
    # calls out (PyPI version check, Sentry, analytics): this machine has no network to wait for.
    os.environ.update({"LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "DJANGO_DB": "sqlite",
                       "DATABASE_NAME": str(a.db.resolve()), "LOG_LEVEL": "WARNING",
                       "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
                       "COLLECT_ANALYTICS": "false"})
    import label_studio
    sys.path.insert(0, os.path.dirname(label_studio.__file__))  # as label_studio/server.py does
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "label_studio.core.settings.label_studio")
    import django
    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.test import Client
    from projects.models import Project

    unapplied = MigrationExecutor(connection).migration_plan(MigrationExecutor(connection).loader.graph.leaf_nodes())
    if unapplied:
        print(f"ls_export_runner: {len(unapplied)} migrations not applied to {a.db}; Label Studio "
              f"{label_studio.__version__} would migrate first", file=sys.stderr)
        return 2
    setup_s = time.perf_counter() - t0

    client = Client()
    exported: dict[str, dict] = {}
    t1 = time.perf_counter()
    for project in Project.objects.order_by("id").select_related("created_by"):
        # The project's owner, logged in as by the login form (users.functions.common.login,
        # which also records the time: without it the session-timeout middleware logs out).
        client.force_login(project.created_by)
        session = client.session
        session["last_login"] = time.time()
        session.save()
        client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key  # (signed-cookie sessions)
        t = time.perf_counter()
        response = client.get(f"/api/projects/{project.id}/export", {"exportType": "JSON"})
        if response.status_code != 200:
            print(f"ls_export_runner: project {project.id}: HTTP {response.status_code} "
                  f"{response.content[:500]!r}", file=sys.stderr)
            return 1
        path = a.out / f"project-{project.id}.json"
        size = 0
        with open(path, "wb") as f:
            for chunk in response.streaming_content:
                f.write(chunk)
                size += len(chunk)
        response.close()
        exported[str(project.id)] = {"file": str(path), "bytes": size, "seconds": time.perf_counter() - t,
                                     "filename": response.get("filename")}
    export_s = time.perf_counter() - t1
    print(json.dumps({"label_studio": label_studio.__version__, "projects": exported,
                      "setup_s": round(setup_s, 3), "export_s": round(export_s, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
