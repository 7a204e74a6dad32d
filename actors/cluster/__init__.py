"""The Ray side: the one adapter that talks to Ray, the shard and router actors,
deployment and discovery. Thin shells over ``actors.core``."""
