// A meeting's lifecycle from Swift: credentials, connect with a pinned certificate,
// push registration, start a meeting, an invitation accepted, audio frames both ways,
// safety numbers, leave, disconnect. The same steps as ffi/kotlin/example/Lifecycle.kt
// (which CI runs).
//
// Built on a Mac by build-xcframework.sh (as a command-line target against the
// XCFramework), then:   lifecycle HOST:PORT SHA256-FINGERPRINT
//
// Listeners are called on the SDK's threads: AsyncStreams hand events to Swift
// concurrency (an iOS app would update its @MainActor view model from them).

import Conclave
import Foundation

final class ClientInbox: ClientListener, @unchecked Sendable {
    let events: AsyncStream<ClientEvent>
    private let continuation: AsyncStream<ClientEvent>.Continuation

    init() { (events, continuation) = AsyncStream.makeStream(of: ClientEvent.self) }

    func onEvent(event: ClientEvent) { continuation.yield(event) }
}

final class MeetingInbox: MeetingListener, @unchecked Sendable {
    let events: AsyncStream<MeetingEvent>
    let frames: AsyncStream<MediaFrame>
    private let eventSink: AsyncStream<MeetingEvent>.Continuation
    private let frameSink: AsyncStream<MediaFrame>.Continuation

    init() {
        (events, eventSink) = AsyncStream.makeStream(of: MeetingEvent.self)
        (frames, frameSink) = AsyncStream.makeStream(of: MediaFrame.self)
    }

    func onEvent(event: MeetingEvent) { eventSink.yield(event) }
    func onFrames(frames: [MediaFrame]) { frames.forEach { frameSink.yield($0) } }
}

/// Sends an audio frame every 20 ms until `receiver` has one (the room is joined in the
/// background after `accept`), for at most 30 s.
func exchange(_ sender: Meeting, _ receiver: MeetingInbox, _ text: String) async throws -> MediaFrame {
    let sending = Task {
        for _ in 0..<1500 where !Task.isCancelled {
            do {
                try sender.sendFrame(kind: .audio, keyframe: false, data: Data(text.utf8))
            } catch ConclaveError.NotJoined {
                // Not in the room yet: the next tick tries again.
            }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
    }
    defer { sending.cancel() }
    for await frame in receiver.frames { return frame }
    throw CancellationError()
}

/// Push wake-ups, once connected: the server's VAPID key goes to the platform's push
/// service, which hands back an endpoint; the server then wakes this device there while it
/// is offline, encrypting to `keys` (keep `keys.export()` in the Keychain next to the
/// credentials). On iOS the push service is the operator's APNs gateway (docs/sdk.md,
/// "Push wake-ups"). False if the server offers no push.
func registerForPush(
    _ client: Client, keys: PushKeys, subscribe: (Data) async throws -> String
) async throws -> Bool {
    do {
        let serverKey = try await client.pushServerKey()
        try await client.registerPush(endpoint: try await subscribe(serverKey), keys: keys)
        return true
    } catch ConclaveError.PushNotOffered {
        return false  // invitations arrive when the app next connects
    }
}

/// A push message arrived (in the notification service extension, or the app started for
/// it): open it with the stored push keys and connect, so that the waiting invitation
/// arrives as `.invited`. Nil when the message is not a wake-up for this device: ignore it.
func onPushMessage(
    body: Data, storedPushKeys: Data, options: ClientOptions, credentials: Credentials,
    inbox: ClientInbox
) async throws -> Client? {
    let wake: WakeUp
    do {
        wake = try openWakeUp(keys: PushKeys.restore(stored: storedPushKeys), body: body)
    } catch ConclaveError.InvalidPushMessage {
        return nil
    }
    // wake.urgent: probably a call; wake.pending: containers waiting (a hint).
    switch wake.action {
    case .connectAndFetch:
        return try await connect(options: options, credentials: credentials, listener: inbox)
    }
}

/// Stands in for the platform's push subscription (APNs token to gateway URL, ...).
func subscribeWithPlatform(_ serverKey: Data) async throws -> String {
    precondition(serverKey.count == 65, "a VAPID key is an uncompressed P-256 point")
    return "https://push.example.invalid/subscription/1"
}

@main
struct Lifecycle {
    static func main() async throws {
        let args = CommandLine.arguments
        guard args.count == 3 else {
            print("usage: lifecycle HOST:PORT SHA256-FINGERPRINT")
            exit(2)
        }
        let options = ClientOptions(server: args[1], trust: .pinnedSha256(fingerprint: args[2]))
        let run = String(UInt64.random(in: 0...UInt64.max), radix: 16)

        // Once per device; keep `credentials.export()` in the Keychain and
        // `Credentials.restore(stored:)` it on the next launch.
        let aliceCredentials = try Credentials.create(username: "alice-\(run)", userKey: UserKey.generate())
        let bobCredentials = try Credentials.create(username: "bob-\(run)", userKey: UserKey.generate())

        let aliceInbox = ClientInbox()
        let bobInbox = ClientInbox()
        let alice = try await connect(options: options, credentials: aliceCredentials, listener: aliceInbox)
        let bob = try await connect(options: options, credentials: bobCredentials, listener: bobInbox)

        // Push: generated once per device (or `PushKeys.restore(stored:)` on later launches).
        let bobPushKeys = PushKeys.generate()
        do {
            let registered = try await registerForPush(bob, keys: bobPushKeys, subscribe: subscribeWithPlatform)
            print(registered ? "push registered" : "this server offers no push wake-ups")
        } catch let ConclaveError.PushEndpointRefused(detail) {
            print("push endpoint refused: \(detail)")  // subscribe with a service it allows
        }
        // A push message that is not a wake-up for Bob's keys is ignored, not acted on.
        let ignored = try await onPushMessage(
            body: Data(count: 120), storedPushKeys: bobPushKeys.export(), options: options,
            credentials: bobCredentials, inbox: bobInbox)
        precondition(ignored == nil)

        let aliceMeeting = MeetingInbox()
        let started = try await alice.startMeeting(
            invitees: [bob.userId()], mediaKinds: [.audio], listener: aliceMeeting)
        precondition(started.report.invitedUsers == [bob.userId()], "bob was not invited")

        var invitation: Invitation?
        for await event in bobInbox.events {
            if case let .invited(received) = event {
                invitation = received
                break
            }
        }
        guard let invitation, invitation.inviter.userId == alice.userId() else {
            fatalError("no invitation from alice")
        }
        let bobMeeting = MeetingInbox()
        let meeting = try await bob.accept(
            meetingId: invitation.meetingId, mediaKinds: [.audio], listener: bobMeeting)

        let toBob = try await exchange(started.meeting, bobMeeting, "hello from alice")
        let toAlice = try await exchange(meeting, aliceMeeting, "hello from bob")
        precondition(toBob.userId == alice.userId() && toAlice.userId == bob.userId())

        let numbers = Set([started.meeting.safetyNumber(), meeting.safetyNumber()])
        precondition(numbers.count == 1 && numbers.first! != nil, "safety numbers differ")
        print("safety number \(numbers.first!!), epoch \(meeting.sendingEpoch())")

        // Chat: end-to-end encrypted, signed by Alice's device, in order.
        try await started.meeting.sendMessage(delivery: .reliable, topic: "chat", body: Data("see you at 3".utf8))
        for await event in bobMeeting.events {
            if case let .message(message) = event {
                precondition(message.userId == alice.userId())
                print("bob read: \(String(decoding: message.body, as: UTF8.self))")
                break
            }
        }

        try await meeting.leave()
        await alice.disconnect()
        await bob.disconnect()
        print("lifecycle done")
    }
}
