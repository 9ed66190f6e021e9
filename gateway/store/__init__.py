"""Persistence behind one small interface. SQLite is the embedded default."""
