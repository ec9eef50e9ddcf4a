"""Stage: networks. The network registry, sliding-window inference, the typed checkpoint, losses."""
