from peersd import protocol as p


def test_send_claim_ack(pair):
    ca, a, cb, b = pair
    sent = ca.request(p.Send, to="beta", text="hello")
    claimed = cb.request(p.Claim)
    assert [m.id for m in claimed.messages] == [sent.message_id]
    assert cb.request(p.Ack, message_ids=[sent.message_id], via="cli").acked == [sent.message_id]
    (item,) = ca.request(p.MessageStatus, message_ids=[sent.message_id]).items
    assert item.state == "delivered" and item.delivered_via == "cli"
