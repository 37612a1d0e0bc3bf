"""The actions flows call by name: the only way a call touches clinic data."""
