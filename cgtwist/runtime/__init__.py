"""The fence around Twisted's private internals: the only package allowed to touch them.

Owns every piece of cgtwist that reads or replaces something Twisted does not publish (a
name with a leading underscore, a method Twisted calls on itself, another module's private
object). Everywhere else cgtwist uses Twisted's public API only; ``tests/test_fence.py``
fails CI when a known private name appears outside this package, and ``.importlinter``
keeps the Twisted modules these pieces reach into imported here alone.

Each piece exists because it was measured on the SMTP path (``bench/smtp-cpu-profile.sh``,
``bench/smtp-vs-postfix.sh``), and each has a stock-Twisted fallback behind one setting,
``[server] runtime = tuned | plain`` (``mode.Runtime``). With ``tuned`` a piece first checks
that the internals it relies on are still there (its module's ``missing``); if a Twisted
upgrade renamed them it falls back to Twisted's own behaviour with a warning in the log,
so an upgrade costs speed, never correctness.

* ``reactor``: ``EPollReactor.doPoll`` without ``log.callWithLogger`` per I/O event, which
  was 12% of an SMTP worker's Python time and 4% of the server's (commit b338c0c).
* ``fastwrite``: a reply ``send``s straight to an idle plain-TCP socket (reads the
  descriptor's ``_tempDataBuffer``) instead of two ``epoll_ctl`` and a reactor turn per
  reply, a fifth of an SMTP worker's time (19f31ac); the worker's ``Q <id>`` line likewise
  into its pipe (StandardIO's ``_writer``, c3ba748); the outbound client's commands and
  messages of one block (epoll_ctl per outbound message 6.9 -> 2.1, 752aeae); and
  ``close_now`` ends an SMTP session whose last reply went out whole at once, as
  ``loseConnection`` does once writing stopped, instead of a writability turn with an empty
  ``send`` (a worker's epoll_ctl per message 4.00 -> 2.00, sendto 7.64 -> 7.00,
  ``bench/smtp-syscalls.sh`` PERF=1 at 10 sessions).
* ``threadpool``: the file-work threads behind ``deferToThreadPool`` without ThreadPool's
  coordinator and Conditions (``Condition.notify`` was 13% of the reactor's GIL time):
  server CPU per message 5.2 -> 4.0-4.4 ms (76b4556), then one woken thread per job,
  516-538 against 471-489 msg/s (14ae2db).
* ``logobservers``: twistd's FileLogObserver formats by ``str.format_map`` with a cached
  timestamp and writes a reactor turn's lines at once (``LogPublisher._observers``,
  ``FileLogObserver._outFile``); Twisted's formatter was a quarter of the reactor's time
  under mail load (19f31ac, 25357b6, 55f5f55). The level filter and the rotating log file
  reach twistd's observers the same way, in both modes.
* ``collector`` (no Twisted internals; chosen by the same setting): CPython's young-generation
  threshold 7,000 instead of 700. A cold outbound drain of 9,500 messages spent 1.1 s of 8.3 s
  CPU in 682 young, 61 middle and 4 full collections (80-320 ms reactor stops each); with it,
  21 young, one middle, no full one.
* ``stopsignals``: SIGTERM/SIGINT handlers that only wake the reactor, recording the signal
  in the reactor's ``_exitSignal`` for twistd. A fix (logging inside Twisted's handler hung
  a loaded server), not a speed piece, so it runs in both modes; without ``_exitSignal`` it
  warns that the exit status will not carry the signal.

Nothing here imports from above ``cgtwist.logs`` (the layers contract in .importlinter).
"""
