"""The butterfly demo: the whole fabric failing over, moving and draining, in one command."""
