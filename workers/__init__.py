"""The composition root: settings -> logging -> Temporal client -> boto3 clients -> worker."""
