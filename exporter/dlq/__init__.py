"""The dead-letter inspector: ``dlq list``, ``dlq show SEQ`` and ``dlq replay``.

It reads with ``$JS.API.STREAM.MSG.GET`` only, walking sequences with ``next_by_subj``: no consumer is
created and nothing is acknowledged, so inspecting leaves the stream and every consumer as they were.
``replay`` publishes only with ``--yes`` and removes a dead letter only with ``--delete`` as well.

One job per module: ``command`` registers the subcommand and runs it, ``arguments`` parses its own flags,
``actions`` carries out list, show and replay, ``reading`` fetches dead letters, ``replay`` republishes
them, ``output`` formats text and JSON, ``payload`` and ``unpack`` decode what a dead letter holds.
"""
