"""The pool of ComfyUI backends: what is known of each, the loop that keeps them healthy and scales them, the
controls an admin uses, and the providers that start them (Docker hosts, local processes)."""
