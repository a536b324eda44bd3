"""Generated from proto/frosted_wire/v1/tail.proto by `make proto`: do not edit the *_pb2* files."""
