"""Enterprise master patient index (跨域主索引). For now: a person is found or created by
their identity document; matching, domains, PIX and merges grow here."""
