"""First half of "a restart in the middle of an open transaction still resolves it".

Sends one transactional message and leaves its transaction open: the producer stops without
committing or rolling back (the checker answers UNKNOWN if asked before it stops). The test
then restarts the broker and runs transaction_restart_resolve.py.
"""

from rocketmq import TransactionChecker, TransactionResolution

from scenario import Scenario


class Undecided(TransactionChecker):
    def check(self, message):
        return TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED


def main(s):
    topic = s.unique("txrestart")
    producer = s.producer([topic], Undecided())
    tx = producer.begin_transaction()
    msg = s.message(topic, f"open-across-restart-{s.suffix}".encode(), tag="restart")
    receipt = producer.send(msg, tx)
    s.check(receipt.transaction_id, "no transaction id")
    s.step(f"left {receipt.message_id} (tx {receipt.transaction_id}) open; stopping the producer")


if __name__ == "__main__":
    Scenario("transaction_restart_open").run(main)
