"""Outbound calls: the AMI client, the consultation dialer and its scheduler."""
