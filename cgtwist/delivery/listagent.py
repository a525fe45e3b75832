"""The LIST delivery module: mail to ``LIST(list@domain)`` — posts, commands and bounces.

Owns acting on a message routed to a list, by the role of each recipient address
(cgtwist.lists.addresses): a post is checked against the list's policy and size limit, held
for moderation or distributed; ``-on``/``-off``/``-request`` carry subscription commands with
confirmation tokens and moderation decisions; ``-owner`` goes to the owner; ``-bounce`` counts
bounces against subscribers. Distribution writes one new spool message for every feed
subscriber (or one per subscriber when the list personalises: its own VERP sender and
unsubscribe token) through the Submission, so the queue manager groups the recipients by
domain into the SMTP and LOCAL queues like any other mail. It never talks SMTP and never
writes a mailbox itself (the archive copy goes through the LOCAL agent's ``store_in``).
"""

from __future__ import annotations

import contextlib
import email.utils
import os
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from cgtwist.delivery.agent import DeliveryAgent, settle
from cgtwist.durable import fsync_dir, write_all
from cgtwist.errors import MailError
from cgtwist.interfaces import IDeliveryAgent, ISubmission
from cgtwist.lists import addresses, bounces, commands, tokens
from cgtwist.lists.addresses import BOUNCE, OFF, ON, OWNER, POST, REQUEST, Role
from cgtwist.lists.headers import (
    field_value,
    is_our_copy,
    notice,
    prepare,
    sender_of,
    split_message,
)
from cgtwist.lists.model import MailingList, Subscriber
from cgtwist.logs import Logger
from cgtwist.message import loops
from cgtwist.settings import SettingsHolder
from cgtwist.storage.lists import DIGEST, HELD, ListStore
from cgtwist.types import Envelope, QueueName, Recipient

log = Logger(namespace="cgtwist.delivery.list")

SECRET_FILE = "lists.secret"


def load_secret(base_dir: str) -> bytes:
    """The server's token secret, ``<base>/lists.secret`` (0600), made on first use: 32 random
    bytes that sign every confirmation, moderation and unsubscribe token. Blocking: called
    once while the service is built. The file appears whole or not at all (written aside,
    fsynced, then linked into place), so an interrupted first start leaves nothing that
    would refuse the next one."""
    path = os.path.join(base_dir, SECRET_FILE)
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                write_all(fd, [os.urandom(32)])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, path)  # never replaces a secret another process made meanwhile
            fsync_dir(base_dir)
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    with open(path, "rb") as f:
        secret = f.read()
    if len(secret) < 16:
        raise RuntimeError(f"{path} holds no usable secret (remove it to make a new one)")
    return secret


class Outcome(Exception):
    """A recipient's final state for this message: ``state`` and SMTP ``detail``."""

    def __init__(self, state: str, detail: str) -> None:
        super().__init__(detail)
        self.state, self.detail = state, detail


@implementer(IDeliveryAgent)
class ListAgent(DeliveryAgent):
    """IDeliveryAgent for module "LIST".

    ``lists``: cgtwist.storage.lists.ListStore; ``submission``: ISubmission for the copies
    and notices; ``secret``: the token key (``load_secret``); ``clock``: time for tokens and
    Date fields; ``archive``: ``store_in(msg_id, account, folder, data)`` of the LOCAL agent.
    """

    module = "LIST"

    def __init__(
        self,
        lists: ListStore,
        submission: ISubmission,
        settings: SettingsHolder,
        secret: bytes,
        hostname: str,
        clock: IReactorTime,
        archive: Optional[Callable[[str, str, str, bytes], defer.Deferred[bool]]] = None,
    ) -> None:
        self.lists = lists
        self.submission = submission
        self.settings = settings
        self.secret = secret
        self.hostname = hostname
        self.clock = clock
        self.archive = archive

    async def attempt(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> list[Recipient]:
        """Act once per role among ``recipients``; fires with them, states set."""
        list_address = queue.queue if queue is not None else ""
        try:
            lst = await self.lists.get_list(list_address)
        except Exception as e:
            log.error(
                "{msg_id}: list {list} lookup failed: {error}",
                msg_id=msg_id,
                list=list_address,
                error=str(e) or type(e).__name__,
            )
            return settle(recipients, "pending", "451 4.3.0 list store unavailable")
        if lst is None:
            return settle(recipients, "failed", "550 5.1.1 no such mailing list")
        by_role: dict[Role, list[Recipient]] = {}
        for r in recipients:
            by_role.setdefault(addresses.role_of(r.address, lst.address), []).append(r)
        for role, group in by_role.items():
            try:
                await self._act(msg_id, lst, role, envelope, data)
                state, detail = "delivered", f"250 2.0.0 accepted by list {lst.address}"
            except Outcome as o:
                state, detail = o.state, o.detail
            except MailError as e:  # the queue or disk is full: submit later
                state, detail = "pending", f"{e.code} {e.enhanced} {e.text}"
            except Exception:
                log.failure(
                    "{msg_id}: list {list} {role} crashed",
                    msg_id=msg_id,
                    list=lst.address,
                    role=role.role,
                )
                state, detail = "pending", "451 4.3.0 internal error in the list module"
            for r in group:
                r.state, r.detail = state, detail
            log.info(
                "{msg_id}: list={list} role={role} from=<{sender}> status={state} {detail}",
                msg_id=msg_id,
                list=lst.address,
                role=role.role,
                sender=envelope.sender,
                state=state,
                detail=detail,
            )
        return recipients

    async def _act(
        self, msg_id: str, lst: MailingList, role: Role, envelope: Envelope, data: bytes
    ) -> None:
        if role.role == POST:
            await self._post(msg_id, lst, envelope, data)
        elif role.role in (ON, OFF, REQUEST):
            await self._command(msg_id, lst, role.role, envelope, data)
        elif role.role == OWNER:
            if not lst.owner:
                raise Outcome("failed", "550 5.1.1 this list has no owner")
            await self._submit(envelope.sender, [lst.owner], data)
        elif role.role == BOUNCE:
            await self._bounce(msg_id, lst, role.arg, data)

    # ---- posts ---------------------------------------------------------------------------

    async def _post(self, msg_id: str, lst: MailingList, envelope: Envelope, data: bytes) -> None:
        fields, _body = split_message(data)
        # Our own copy back in: our List-Id (RFC 2919) or, when another list replaced that,
        # our hop marker (cgtwist.message.loops), which every list keeps.
        if is_our_copy(fields, lst) or loops.refusal(lst.address, loops.hops(data)):
            log.warn(
                "{msg_id}: list {list} mail loop: its own copy came back from <{sender}>",
                msg_id=msg_id,
                list=lst.address,
                sender=envelope.sender,
            )
            raise Outcome("delivered", "250 2.0.0 loop: the list's own copy dropped")
        if not envelope.sender:  # a bounce sent to the list address: never distributed
            raise Outcome("delivered", "250 2.0.0 null sender: not distributed")
        limit = lst.size_limit
        if limit and len(data) > limit:
            raise Outcome("failed", f"552 5.3.4 message larger than the list's {limit} octets")
        poster = await self._poster(lst, envelope.sender, sender_of(fields))
        if poster is not None and poster.mode == "banned":
            raise Outcome("failed", "550 5.7.1 you may not post to this list")
        if lst.policy == "subscribers" and (poster is None or not poster.may_post):
            raise Outcome("failed", "550 5.7.1 only subscribers may post to this list")
        # Only the owner logged in (SMTP AUTH) skips moderation: an envelope sender is
        # anyone's to write.
        owner = bool(lst.owner) and envelope.submit.get("account", "").lower() == lst.owner
        if lst.policy == "moderated" and not owner:
            subject = field_value(fields, "Subject") or ""
            await self._hold(msg_id, lst, envelope.sender, subject, data)
            raise Outcome("delivered", "250 2.0.0 held for moderation")
        await self.distribute(msg_id, lst, data)

    async def _poster(self, lst: MailingList, sender: str, from_: str) -> Optional[Subscriber]:
        for who in dict.fromkeys(a for a in (sender.lower(), from_) if a):
            sub = await self.lists.get_subscriber(lst.address, who)
            if sub is not None:
                return sub
        return None

    async def distribute(self, msg_id: str, lst: MailingList, data: bytes) -> int:
        """Send the copy of a post to every feed subscriber, keep it for the digest and the
        archive; fires with the number of feed recipients."""
        subs: list[Subscriber] = await self.lists.subscribers(lst.address)
        feed = [s.address for s in subs if s.receives == "feed"]
        # read once; per subscriber only the List-* block differs. The hop marker goes on
        # every copy, so it comes back in even through a list that replaces our List-Id.
        prepared = prepare(loops.marked(data, lst.address), lst)
        copy = prepared.copy(lst)  # shared: no subscriber to name in one-click
        if feed and lst.personalize:
            for address in feed:
                token = self.token("unsubscribe", lst, address)
                one = prepared.copy(lst, self._one_click(lst, token), token)
                await self._submit(addresses.bounce_address(lst.address, address), [address], one)
        elif feed:
            await self._submit(addresses.bounce_address(lst.address), feed, copy)
        # after the copies: a submission refused for now (disk full) retries the whole post,
        # which must not put it into the digest twice
        if any(s.receives in ("digest", "index") for s in subs):
            await self.lists.keep(lst.address, DIGEST, "", prepared.subject, copy)
        await self._archive(msg_id, lst, copy)
        log.info(
            "{msg_id}: list {list} distributed to {n} subscriber(s)",
            msg_id=msg_id,
            list=lst.address,
            n=len(feed),
        )
        return len(feed)

    async def _archive(self, msg_id: str, lst: MailingList, copy: bytes) -> None:
        account = lst.archive or lst.owner
        if not lst.archive_folder or not account or self.archive is None:
            return
        # The copies are out: failing the post now would send them all again on its retry,
        # so a lost archive copy is only logged.
        try:
            stored = await self.archive(msg_id, account, lst.archive_folder, copy)
        except Exception:
            log.failure(
                "{msg_id}: list {list} archive copy failed", msg_id=msg_id, list=lst.address
            )
            return
        if not stored:
            log.error(
                "{msg_id}: list {list} archive copy to {account} {folder} failed",
                msg_id=msg_id,
                list=lst.address,
                account=account,
                folder=lst.archive_folder,
            )

    async def _hold(
        self, msg_id: str, lst: MailingList, sender: str, subject: str, data: bytes
    ) -> None:
        held = await self.lists.keep(lst.address, HELD, sender, subject, data)
        approve = self.token("approve", lst, held, self.settings.current.lists.moderation_timeout)
        reject = self.token("reject", lst, held, self.settings.current.lists.moderation_timeout)
        request = addresses.role_address(lst.address, REQUEST)
        text = (
            f"A message to {lst.address} is held for your approval.\n\n"
            f"From: {sender}\nSubject: {subject}\nHeld as: {held}\n\n"
            f"To approve it, reply to {request} with the subject:\n  approve {approve}\n\n"
            f"To reject it, reply with the subject:\n  reject {reject}\n\n"
            f"Or: cgtwist-admin list approve|reject {lst.address} {held}\n"
            "Without a decision it is rejected in "
            f"{self.settings.current.lists.moderation_timeout // 3600} hour(s).\n"
        )
        if lst.owner:
            await self._notice(
                lst, lst.owner, f"{lst.address}: approve {held}?", text, reply_to=request
            )
        log.info(
            "{msg_id}: list {list} held post from <{sender}> as {held}",
            msg_id=msg_id,
            list=lst.address,
            sender=sender,
            held=held,
        )

    async def decide(self, lst: MailingList, held_id: str, approve: bool, why: str = "") -> bool:
        """Approve (distribute) or reject (tell the poster) a held post; False when it is no
        longer held. The CLI, a reply with a token and the moderation timeout all end here."""
        held = await self.lists.take(lst.address, HELD, held_id)
        if held is None:
            return False
        if approve:
            await self.distribute(f"held:{held_id}", lst, held.data)
        elif held.sender:
            reason = why or "the list's moderator rejected it"
            await self._notice(
                lst,
                held.sender,
                f"Your message to {lst.address} was not sent",
                f"Your message with the subject\n  {held.subject}\nwas not "
                f"distributed to {lst.address}: {reason}.\n",
            )
        log.info(
            "list {list} held post {held} {what}",
            list=lst.address,
            held=held_id,
            what="approved" if approve else f"rejected ({why or 'moderator'})",
        )
        return True

    # ---- commands ------------------------------------------------------------------------

    async def _command(
        self, msg_id: str, lst: MailingList, role: str, envelope: Envelope, data: bytes
    ) -> None:
        requester = envelope.sender.lower()
        if not requester:  # RFC 3834 §2: never answer a bounce
            raise Outcome("delivered", "250 2.0.0 null sender: command ignored")
        fields, body = split_message(data)
        if commands.automatic(
            field_value(fields, "Auto-Submitted"), field_value(fields, "Precedence")
        ):
            # RFC 3834 §2: an autoresponder's reply to a notice must not start a ping-pong
            raise Outcome("delivered", "250 2.0.0 automatic message: command ignored")
        subject = field_value(fields, "Subject") or ""
        cmd = commands.parse(role, subject, body)
        now = self.clock.seconds()
        token = tokens.find(self.secret, cmd.text, lst.address, now)
        if token is None and cmd.action in ("confirm", "approve", "reject", "unsubscribe"):
            token = tokens.find(
                self.secret,
                subject + " " + body[:4096].decode("utf-8", "replace"),
                lst.address,
                now,
            )
        if token is not None:
            await self._confirmed(lst, token, requester)
        elif cmd.action == "subscribe":
            await self._subscribe_request(lst, requester)
        elif cmd.action == "unsubscribe":
            await self._unsubscribe_request(lst, requester)
        elif cmd.action in ("confirm", "approve", "reject"):
            await self._notice(
                lst,
                requester,
                f"{lst.address}: {cmd.action} failed",
                "The token in your message is not valid or has expired.\n",
            )
        else:
            await self._notice(lst, requester, f"{lst.address}: help", self._help(lst))

    def _help(self, lst: MailingList) -> str:
        on, off = (addresses.role_address(lst.address, r) for r in (ON, OFF))
        return (
            f"{lst.address}{': ' + lst.description if lst.description else ''}\n\n"
            f"To subscribe, send a message to {on}.\nTo unsubscribe, send one to {off}.\n"
            f"Posts go to {lst.address}.\n"
        )

    async def one_click(self, list_address: str, text: str) -> bool:
        """RFC 8058 one-click unsubscribe (the web listener's ``/lists/unsubscribe``): a valid
        unsubscribe token of the list removes its subscriber at once, as the signed mailto:
        of the same copy does. False for anything else (no such list, a bad or expired token,
        a token of another action)."""
        lst = await self.lists.get_list(list_address)
        if lst is None:
            return False
        token = tokens.check(self.secret, text, lst.address, self.clock.seconds(), "unsubscribe")
        if token is None:
            return False
        await self._confirmed(lst, token, token.subject)
        return True

    async def _confirmed(self, lst: MailingList, token: tokens.Token, requester: str) -> None:
        if token.action == "subscribe":
            await self.lists.put_subscribers(lst.address, [Subscriber(token.subject)])
            await self._notice(lst, token.subject, f"Welcome to {lst.address}", self._help(lst))
            log.info(
                "list {list}: {who} subscribed (confirmed)", list=lst.address, who=token.subject
            )
        elif token.action == "unsubscribe":
            if await self.lists.remove_subscriber(lst.address, token.subject):
                await self._notice(
                    lst,
                    token.subject,
                    f"Goodbye from {lst.address}",
                    f"You are no longer subscribed to {lst.address}.\n",
                )
                log.info("list {list}: {who} unsubscribed", list=lst.address, who=token.subject)
        else:
            await self.decide(lst, token.subject, token.action == "approve")

    async def _subscribe_request(self, lst: MailingList, who: str) -> None:
        sub = await self.lists.get_subscriber(lst.address, who)
        if sub is not None and sub.mode == "banned":
            raise Outcome("failed", "550 5.7.1 you may not subscribe to this list")
        if sub is not None:
            await self._notice(
                lst,
                who,
                f"{lst.address}: already subscribed",
                f"{who} is already subscribed to {lst.address}.\n",
            )
            return
        if not lst.confirm_subscribe:
            await self._confirmed(lst, tokens.Token("subscribe", lst.address, who, 0), who)
            return
        await self._ask(lst, "subscribe", who, f"subscribe {who} to {lst.address}")

    async def _unsubscribe_request(self, lst: MailingList, who: str) -> None:
        sub = await self.lists.get_subscriber(lst.address, who)
        if sub is None:
            await self._notice(
                lst,
                who,
                f"{lst.address}: not subscribed",
                f"{who} is not subscribed to {lst.address}.\n",
            )
            return
        await self._ask(lst, "unsubscribe", who, f"unsubscribe {who} from {lst.address}")

    async def _ask(self, lst: MailingList, action: str, who: str, what: str) -> None:
        """Ask ``who`` to confirm ``action``: the token rides in the subject, so a plain
        reply to the ``-request`` address (commands.parse, tokens.find) confirms it."""
        token = self.token(action, lst, who)
        request = addresses.role_address(lst.address, REQUEST)
        await self._notice(
            lst,
            who,
            f"confirm {token}",
            f"Someone asked to {what}.\n\n"
            "To confirm, reply to this message (keep the subject), or send a message to "
            f"{request} with the subject:\n  confirm {token}\n\n"
            "If you did not ask, ignore this message.\n",
            reply_to=request,
        )

    # ---- bounces -------------------------------------------------------------------------

    async def _bounce(self, msg_id: str, lst: MailingList, verp: str, data: bytes) -> None:
        found = bounces.attribute(verp, data)
        if not found:
            log.info(
                "{msg_id}: list {list} bounce names no subscriber", msg_id=msg_id, list=lst.address
            )
            return
        now = self.clock.seconds()
        window = self.settings.current.lists.bounce_window
        limit = self.settings.current.lists.bounce_limit
        for who in found:
            sub = await self.lists.get_subscriber(lst.address, who)
            if sub is None:
                continue
            after = bounces.count(sub, now, window, limit)
            await self.lists.put_subscribers(lst.address, [after])
            log.info(
                "{msg_id}: list {list} bounce {n}/{limit} for {who}",
                msg_id=msg_id,
                list=lst.address,
                n=after.bounces,
                limit=limit,
                who=who,
            )
            if after.state == "suspended" and sub.state != "suspended" and lst.owner:
                await self._notice(
                    lst,
                    lst.owner,
                    f"{lst.address}: {who} suspended",
                    f"{who} bounced {after.bounces} time(s) and no longer receives "
                    f"{lst.address}; it is removed in "
                    f"{self.settings.current.lists.remove_after // 3600} hour(s).\n",
                )

    # ---- plumbing ------------------------------------------------------------------------

    def token(self, action: str, lst: MailingList, subject: str, life: Any = None) -> str:
        life = float(life if life is not None else self.settings.current.lists.confirm_timeout)
        return tokens.make(
            self.secret, action, lst.address, subject, int(self.clock.seconds() + life)
        )

    def _one_click(self, lst: MailingList, token: str) -> str:
        base = self.settings.current.lists.unsubscribe_url or ""
        return tokens.unsubscribe_url(base, lst.address, token) if base else ""

    async def send(self, to: list[str], data: bytes, lst: MailingList) -> None:
        """Submit ``data`` from the list (its bounce address) to ``to`` (digests)."""
        await self._submit(addresses.bounce_address(lst.address), to, data)

    async def notify(self, lst: MailingList, to: str, subject: str, text: str) -> None:
        """A notice from the list to ``to`` (the owner: removals after bounces)."""
        await self._notice(lst, to, subject, text)

    async def _notice(
        self, lst: MailingList, to: str, subject: str, text: str, reply_to: str = ""
    ) -> None:
        request = addresses.role_address(lst.address, REQUEST)
        extra = f"Reply-To: {reply_to}\r\n" if reply_to else ""
        extra += f"List-Id: <{lst.name}.{lst.domain}>\r\n"
        data = notice(
            request,
            to,
            subject,
            text,
            email.utils.formatdate(self.clock.seconds()),
            email.utils.make_msgid(domain=self.hostname),
            extra,
        )
        await self._submit(addresses.bounce_address(lst.address), [to], data)

    async def _submit(self, sender: str, to: list[str], data: bytes) -> None:
        envelope = Envelope(
            sender=sender,
            recipients=[Recipient(a) for a in to],
            submit={"protocol": "LIST", "peer": "", "helo": self.hostname},
        )
        await self.submission.submit(envelope, data)
