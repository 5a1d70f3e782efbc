"""gcp-storage-emulator in memory, for the ``gcs_service`` test service:
``python tests/gcs_emulator_server.py PORT``.

It runs in a process of its own, as the other test servers do: a server thread in the test
process would keep the converters from forking their worker processes (they fork only while no
other thread runs) in every test after the first that used it.
"""

import logging
import sys

from gcp_storage_emulator.server import create_server

if __name__ == "__main__":
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    server = create_server("127.0.0.1", int(sys.argv[1]), in_memory=True)
    # The emulator rewrites an index of every object after each write (O(n^2) for n objects); in
    # memory nobody reads that file, so a listing test of 1,000+ objects skips it.
    storage = getattr(server, "_storage", None)
    if storage is not None and hasattr(storage, "_write_config_to_file"):
        storage._write_config_to_file = lambda: None
    server.run()  # until terminated
