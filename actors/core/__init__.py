"""The plain coordination core: Python + numpy, never Ray (a unit test checks it)."""
