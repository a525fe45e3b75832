"""Protocol fuzz suite: SMTP, IMAP and POP3 in each of their states, driven in-process.

Commands come from a grammar of real verbs with mutated arguments (tests/fuzz/grammar.py); the
drivers (tests/fuzz/drivers.py) build the real protocol objects on a StringTransport and a
Clock, feed one command at a time, and check what a client would notice: every command gets
exactly one protocol-correct final reply, no reply takes more than a second of the reactor's
time, and nothing logs a traceback. Runs in the normal pytest run with bounded examples.
"""
