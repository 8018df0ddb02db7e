"""Tests for the outbound ESMTP client, its DATA encoder and TLS options."""
