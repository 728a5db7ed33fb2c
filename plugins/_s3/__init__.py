"""Parts of the S3 plugin: entries, bucket facts, listing, purge, completion."""
