"""The sweeps the daemon runs on a timer: Comfy API v2 jobs past their retention (``jobs``) and blobs no asset
names (``blobs``). Each is a loop the daemon owns, over the stores and the files; the decisions are ``policy``'s."""
