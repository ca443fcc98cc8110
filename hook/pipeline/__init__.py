"""The deploy pipeline, one code path for the hook and for ``--dry-run``.

A module per stage; :func:`hook.pipeline.deploy.run` reads as the stage list.
"""
