"""Platform staff: people who run the platform (reviewers), members of no tenant."""
