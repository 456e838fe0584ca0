"""A loopback Xet CAS built from the public Xet protocol specification
(huggingface.co/docs/xet): hashing, chunking, xorb and shard formats, and the CAS HTTP API."""

from tests.support.xet.cas import FakeXetCas

__all__ = ["FakeXetCas"]
