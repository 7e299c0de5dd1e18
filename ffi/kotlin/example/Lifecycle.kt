// A meeting's lifecycle from Kotlin: credentials, connect with a pinned certificate,
// start a meeting, an invitation accepted, audio frames both ways, safety numbers,
// leave, disconnect. Run by ffi/kotlin/check.sh against a real conclave-sfu:
//
//   kotlin -cp conclave.jar:jna.jar:kotlinx-coroutines-core.jar LifecycleKt HOST:PORT FINGERPRINT
//
// An Android app does the same from a ViewModel's coroutine scope; listeners are
// called on the SDK's threads, so hand events to the main thread (or a Flow).

import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import uniffi.conclave.ChatMessage
import uniffi.conclave.ClientEvent
import uniffi.conclave.ClientListener
import uniffi.conclave.ClientOptions
import uniffi.conclave.ConclaveException
import uniffi.conclave.Credentials
import uniffi.conclave.Delivery
import uniffi.conclave.MediaFrame
import uniffi.conclave.MediaKind
import uniffi.conclave.Meeting
import uniffi.conclave.MeetingEvent
import uniffi.conclave.MeetingListener
import uniffi.conclave.ServerTrust
import uniffi.conclave.UserKey
import uniffi.conclave.connect

/** Queues a client's events for the app's own thread. */
class ClientInbox : ClientListener {
    val events = LinkedBlockingQueue<ClientEvent>()
    override fun onEvent(event: ClientEvent) { events.put(event) }
}

/** Queues a meeting's events and frames. */
class MeetingInbox : MeetingListener {
    val events = LinkedBlockingQueue<MeetingEvent>()
    val frames = LinkedBlockingQueue<MediaFrame>()
    override fun onEvent(event: MeetingEvent) { events.put(event) }
    override fun onFrames(frames: List<MediaFrame>) { this.frames.addAll(frames) }
}

fun invitation(inbox: ClientInbox): ClientEvent.Invited {
    while (true) {
        val event = inbox.events.poll(30, TimeUnit.SECONDS) ?: error("no invitation within 30 s")
        if (event is ClientEvent.Invited) return event
    }
}

/** Sends one audio frame a tick until `receiver` has one, bounded. */
suspend fun exchange(sender: Meeting, receiver: MeetingInbox, text: String): MediaFrame {
    repeat(1500) {
        try {
            sender.sendFrame(MediaKind.AUDIO, false, text.toByteArray())
        } catch (e: ConclaveException.NotJoined) {
            // The room is being joined: try again on the next tick.
        }
        receiver.frames.poll()?.let { return it }
        delay(20)
    }
    error("no frame within 30 s")
}

/** The next in-meeting message `inbox` receives, bounded. */
fun chatMessage(inbox: MeetingInbox): ChatMessage {
    while (true) {
        val event = inbox.events.poll(30, TimeUnit.SECONDS) ?: error("no message within 30 s")
        if (event is MeetingEvent.Message) return event.message
    }
}

fun main(args: Array<String>) = runBlocking {
    require(args.size == 2) { "usage: LifecycleKt HOST:PORT SHA256-FINGERPRINT" }
    val options = ClientOptions(server = args[0], trust = ServerTrust.PinnedSha256(args[1]))
    val run = System.nanoTime().toString(16)

    // Once per device; store credentials.export() encrypted and restore it next time.
    val aliceCredentials = Credentials.create("alice-$run", UserKey.generate())
    val bobCredentials = Credentials.restore(Credentials.create("bob-$run", UserKey.generate()).export())

    val aliceInbox = ClientInbox()
    val bobInbox = ClientInbox()
    val alice = connect(options, aliceCredentials, aliceInbox)
    val bob = connect(options, bobCredentials, bobInbox)

    val aliceMeeting = MeetingInbox()
    val started = alice.startMeeting(listOf(bob.userId()), listOf(MediaKind.AUDIO), aliceMeeting)
    check(started.report.invitedUsers == listOf(bob.userId())) { "bob was not invited" }

    val invited = invitation(bobInbox).invitation
    check(invited.inviter.userId == alice.userId())
    val bobMeeting = MeetingInbox()
    val meeting = bob.accept(invited.meetingId, listOf(MediaKind.AUDIO), bobMeeting)

    val toBob = exchange(started.meeting, bobMeeting, "hello from alice")
    val toAlice = exchange(meeting, aliceMeeting, "hello from bob")
    check(String(toBob.data).startsWith("hello from alice") && toBob.userId == alice.userId())
    check(String(toAlice.data).startsWith("hello from bob") && toAlice.userId == bob.userId())

    val numbers = setOf(started.meeting.safetyNumber(), meeting.safetyNumber())
    check(numbers.size == 1 && numbers.first() != null) { "safety numbers differ: $numbers" }
    println("safety number ${numbers.first()}, epoch ${meeting.sendingEpoch()}")

    // Chat: end-to-end encrypted, signed by Alice's device, in order.
    started.meeting.sendMessage(Delivery.RELIABLE, "chat", "see you at 3".toByteArray())
    val chat = chatMessage(bobMeeting)
    check(chat.userId == alice.userId() && String(chat.body) == "see you at 3")
    println("bob read: ${String(chat.body)}")

    meeting.leave()
    alice.disconnect()
    bob.disconnect()
    println("lifecycle done")
}
