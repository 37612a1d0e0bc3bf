"""A fake Asterisk for tests: the AMI server and the FastAGI caller, speaking the real protocols."""
