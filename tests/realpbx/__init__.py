"""The real-PBX test tier: nobat against a real Asterisk 22 (see README.md here)."""
