//! The order in which one meeting's outputs are carried out (sans-IO).

use crate::meeting::rekey::MeetingOutput;

/// Orders one round of a meeting's outputs for carrying out: the room rotation first,
/// so that members re-prove an epoch the room already has when the switch is
/// announced; the rest keep their order.
pub(crate) fn rotate_before_switch(outputs: &mut [MeetingOutput]) {
    outputs.sort_by_key(|o| !matches!(o, MeetingOutput::RotateRoom { .. }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meeting::Epoch;

    #[test]
    fn the_rotation_goes_first_and_the_rest_keep_their_order() {
        let mut outputs = vec![
            MeetingOutput::SendingEpoch { epoch: Epoch(2) },
            MeetingOutput::DropEpoch { epoch: Epoch(0) },
            MeetingOutput::RotateRoom {
                from: Epoch(1),
                to: Epoch(2),
            },
            MeetingOutput::RosterChanged,
        ];
        rotate_before_switch(&mut outputs);
        assert!(matches!(
            outputs.as_slice(),
            [
                MeetingOutput::RotateRoom {
                    from: Epoch(1),
                    to: Epoch(2)
                },
                MeetingOutput::SendingEpoch { epoch: Epoch(2) },
                MeetingOutput::DropEpoch { epoch: Epoch(0) },
                MeetingOutput::RosterChanged,
            ]
        ));
    }
}
