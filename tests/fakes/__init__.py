"""Fakes of outside services for the tests: real local servers, never patched clients."""
