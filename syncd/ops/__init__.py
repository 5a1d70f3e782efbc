"""Operations: ``metrics`` (Prometheus, one vocabulary for ``/metrics`` and ``--metrics-file``),
``health`` (readiness), ``http`` (the endpoints, one WSGI app) and ``systemd`` (sd_notify)."""
