"""What the AGI and AMI codecs share: cutting a byte stream into whole frames."""
