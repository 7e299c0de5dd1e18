// A meeting's lifecycle from Kotlin: credentials, connect with a pinned certificate,
// push registration, start a meeting, an invitation accepted, audio frames both ways,
// safety numbers, leave, disconnect. Run by ffi/kotlin/check.sh against a real
// conclave-sfu (without push: the example says so and goes on):
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
import uniffi.conclave.Client
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
import uniffi.conclave.PushKeys
import uniffi.conclave.ServerTrust
import uniffi.conclave.UserKey
import uniffi.conclave.WakeAction
import uniffi.conclave.connect
import uniffi.conclave.openWakeUp

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

/**
 * Push wake-ups, once connected: the server's VAPID key goes to the platform's push
 * service, which hands back an endpoint; the server then wakes this device there while
 * it is offline, encrypting to `keys` (keep `keys.export()` next to the credentials).
 * On Android the push service is the operator's FCM gateway or a UnifiedPush
 * distributor (docs/sdk.md, "Push wake-ups"). False if the server offers no push.
 */
suspend fun registerForPush(client: Client, keys: PushKeys, subscribe: (ByteArray) -> String): Boolean =
    try {
        client.registerPush(subscribe(client.pushServerKey()), keys)
        true
    } catch (e: ConclaveException.PushNotOffered) {
        false // invitations arrive when the app next connects
    }

/**
 * A push message arrived (in the FirebaseMessagingService or UnifiedPush receiver; the
 * app may have been started just for it): open it with the stored push keys and connect,
 * so that the waiting invitation arrives as ClientEvent.Invited. Null when the message
 * is not a wake-up for this device: ignore it.
 */
suspend fun onPushMessage(
    body: ByteArray,
    storedPushKeys: ByteArray,
    options: ClientOptions,
    credentials: Credentials,
    inbox: ClientInbox,
): Client? {
    val wake = try {
        openWakeUp(PushKeys.restore(storedPushKeys), body)
    } catch (e: ConclaveException.InvalidPushMessage) {
        return null
    }
    // wake.urgent: probably a call; wake.pending: containers waiting (a hint).
    return when (wake.action) {
        WakeAction.CONNECT_AND_FETCH -> connect(options, credentials, inbox)
    }
}

/** Stands in for the platform's push subscription (FCM token to gateway URL, ...). */
fun subscribeWithPlatform(serverKey: ByteArray): String {
    check(serverKey.size == 65) { "a VAPID key is an uncompressed P-256 point" }
    return "https://push.example.invalid/subscription/1"
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

    // Push: generated once per device (or PushKeys.restore(stored) on later starts).
    val bobPushKeys = PushKeys.generate()
    try {
        val registered = registerForPush(bob, bobPushKeys, ::subscribeWithPlatform)
        println(if (registered) "push registered" else "this server offers no push wake-ups")
    } catch (e: ConclaveException.PushEndpointRefused) {
        println("push endpoint refused: ${e.detail}") // subscribe with a service it allows
    }
    // A push message that is not a wake-up for Bob's keys is ignored, not acted on.
    check(onPushMessage(ByteArray(120), bobPushKeys.export(), options, bobCredentials, bobInbox) == null)

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
