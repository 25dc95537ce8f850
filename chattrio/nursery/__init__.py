"""Supervision: the node's one supervisor nursery and the restart policy of its children."""
