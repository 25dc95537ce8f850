"""When a run has settled (--until-settled): the workers' reports, and the parent's decision."""

from dataclasses import dataclass

from chattrio.bot.settle import SettleState, settled, state_of


@dataclass
class FakeMember:
    room_id: int
    held: int | None
    busy: bool = False

    def unsettled(self) -> bool:
        return self.busy

    def highest_held(self) -> int | None:
        return self.held


def test_a_worker_reports_its_unsettled_users_and_the_lowest_seq_held_per_room():
    users = [FakeMember(1, 40), FakeMember(1, 31), FakeMember(2, 7), FakeMember(2, None), FakeMember(3, 9, busy=True)]
    assert state_of(users, {1: 40, 2: 7}) == SettleState(1, {1: 40, 2: 7}, {1: 31, 2: 7})


def test_settled_once_every_worker_s_users_hold_the_last_seq_acked_to_anyone():
    # room 1 spans both workers; its last message was acknowledged to a user of the second
    first = SettleState(0, {1: 30}, {1: 30, 2: 12})
    assert not settled([first, SettleState(0, {1: 33}, {1: 33})])  # the first's users lack 33
    assert settled([SettleState(0, {1: 30}, {1: 33, 2: 12}), SettleState(0, {1: 33}, {1: 35})])


def test_not_settled_while_a_worker_is_silent_or_has_an_unsettled_user():
    done = SettleState(0, {1: 5}, {1: 5})
    assert not settled([done, None])
    assert not settled([done, SettleState(2, {}, {1: 5})])
    assert settled([done])


def test_a_room_whose_users_all_failed_to_join_does_not_hold_the_run():
    # worker 2's users of room 1 never entered: it reports nothing held there
    assert settled([SettleState(0, {1: 9}, {1: 9}), SettleState(0, {}, {})])
