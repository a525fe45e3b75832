"""Child processes of the server: ``supervisor`` starts, watches, restarts and stops them
(shared by the SMTP receiving workers, cgtwist.smtpworker, and the outbound delivery workers,
cgtwist.outworker)."""
