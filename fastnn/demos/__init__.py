"""The draw-a-digit demo: the model and test-set cache (state), the window (window), the web server
and its page (web, web.html)."""
