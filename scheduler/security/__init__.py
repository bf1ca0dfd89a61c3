"""Identity and access: the cluster CA and certificates, user tokens, and the access policy.

Pure helpers (plus file writing for the CA): no gRPC, no store, no core. The API's
interceptors and the store use them; the CLIs call them for ``firsthopctl certs``.
"""
