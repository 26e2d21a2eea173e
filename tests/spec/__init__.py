"""MongoDB's Unified Test Format CRUD tests, run against asyncmongo with PyMongo as the witness."""
