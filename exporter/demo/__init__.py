"""The embedded demo: a real nats-server with the AI platform's streams, its traffic and failures, and the
exporter watching it, on one command (``python -m exporter demo``).

``platform.yaml`` is the declarative platform; ``provisioning`` applies it to any NATS (also offered as
``python -m exporter provision``); ``traffic`` and ``chathandler`` play the platform's publishers and its
failing ``chat-handler``; ``runner`` ties them together with a server and the exporter.
"""
