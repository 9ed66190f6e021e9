"""Tests of ``arouter bench`` (gateway/bench), one file per module."""
