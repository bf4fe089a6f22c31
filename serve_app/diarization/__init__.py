"""Who spoke when, offline: speaker embeddings of each piece (resemblyzer's bundled encoder),
clustering into speakers and turns, and a transcript labelled with them."""
