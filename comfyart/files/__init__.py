"""Files: uploaded inputs, downloaded outputs (on disk or in object storage), and the thread that writes them."""
