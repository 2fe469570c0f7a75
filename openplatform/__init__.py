"""The Sanic application: routes, signed access, sessions, pages and the command line."""
