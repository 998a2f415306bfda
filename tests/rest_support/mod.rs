//! What the REST client tests share, over plain TCP and over TLS: the order they place,
//! and the raw server side's reading of a request head.
#![allow(dead_code)]

use std::time::Duration;

use mmd::binance::rest::{NewOrder, OrderType, RespType, RestClient, TimeInForce};
use mmd::binance::types::Side;
use rust_decimal_macros::dec;
use tokio::io::{AsyncRead, AsyncReadExt as _};

pub fn order(symbol: &str) -> NewOrder {
    NewOrder {
        symbol: symbol.into(),
        side: Side::Sell,
        order_type: OrderType::Limit,
        time_in_force: Some(TimeInForce::Gtc),
        qty: dec!(0.010),
        price: Some(dec!(52000.00)),
        client_order_id: "mmd-1".into(),
        resp_type: RespType::Result,
    }
}

/// The next request head (through its blank line) off `io`; what follows stays in `buf`.
/// None once the connection ends.
pub async fn read_head<R: AsyncRead + Unpin>(io: &mut R, buf: &mut Vec<u8>) -> Option<String> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    Some(head)
}

/// Waits until `c` has an order line open and idle.
pub async fn idle_line(c: &RestClient) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while c.idle_order_lines() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("an order line opens");
}
