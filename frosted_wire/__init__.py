"""The wire contract's Python side: stubs generated from ``proto/`` (``v1/``) and the tensor codec both
services share. Hand-written code here is only what turns tensors into messages and back."""
