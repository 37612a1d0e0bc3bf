"""What the network doors share: byte streams cut into whole frames, listening sockets."""
