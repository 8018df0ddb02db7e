"""Tests of hurricane.admin: the SSH manhole and the twistd --logger observers."""
