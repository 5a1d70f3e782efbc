"""Bundles: each project's labeled tasks in Label Studio's export formats, published to the
target. ``config`` reads the ``bundles:`` section (no converter imported), ``build`` converts
and publishes, ``scheduler`` decides when, off the sync loop."""
