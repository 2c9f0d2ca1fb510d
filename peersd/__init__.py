"""claude-peers: the peersd daemon, its wire protocol, its store and the client library."""

__version__ = "0.1.0"
