// A meeting's lifecycle from Swift: credentials, connect with a pinned certificate,
// start a meeting, an invitation accepted, audio frames both ways, safety numbers,
// leave, disconnect. The same steps as ffi/kotlin/example/Lifecycle.kt (which CI runs).
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
