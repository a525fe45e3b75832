"""Infrastructure: the adbapi account store (domains, accounts, aliases, settings) and passwords."""
