//! The JSON shapes the simulator emits, field for field as in Binance's own examples
//! (`../shared/binance-fixtures/spot`): key names, key order and JSON types (numbers as
//! strings where Binance uses strings).

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};

/// A decimal printed the way Binance prints amounts: a string with 8 decimals
/// (more if the exact value needs them: exactness beats cosmetics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct D8(pub Decimal);

impl Serialize for D8 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fmt8(self.0))
    }
}

pub fn fmt8(d: Decimal) -> String {
    let d = d.normalize();
    if d.scale() > 8 {
        d.to_string()
    } else {
        format!("{:.8}", d)
    }
}

#[derive(Serialize)]
pub struct ExecutionReport<'a> {
    pub e: &'static str,
    #[serde(rename = "E")]
    pub event_time: u64,
    pub s: &'a str,
    pub c: &'a str,
    #[serde(rename = "S")]
    pub side: &'static str,
    pub o: &'static str,
    pub f: &'static str,
    pub q: D8,
    pub p: D8,
    #[serde(rename = "P")]
    pub stop_price: D8,
    #[serde(rename = "F")]
    pub iceberg_qty: D8,
    pub g: i64,
    #[serde(rename = "C")]
    pub orig_client_order_id: &'a str,
    pub x: &'static str,
    #[serde(rename = "X")]
    pub status: &'static str,
    pub r: &'static str,
    pub i: u64,
    pub l: D8,
    pub z: D8,
    #[serde(rename = "L")]
    pub last_price: D8,
    pub n: String,
    #[serde(rename = "N")]
    pub commission_asset: Option<&'a str>,
    #[serde(rename = "T")]
    pub transaction_time: u64,
    pub t: i64,
    #[serde(rename = "I")]
    pub execution_id: u64,
    pub w: bool,
    pub m: bool,
    #[serde(rename = "M")]
    pub ignore: bool,
    #[serde(rename = "O")]
    pub creation_time: u64,
    #[serde(rename = "Z")]
    pub cum_quote: D8,
    #[serde(rename = "Y")]
    pub last_quote: D8,
    #[serde(rename = "Q")]
    pub quote_order_qty: D8,
    #[serde(rename = "W")]
    pub working_time: u64,
    #[serde(rename = "V")]
    pub stp_mode: &'static str,
}

#[derive(Serialize)]
pub struct AssetBalance<'a> {
    pub a: &'a str,
    pub f: D8,
    pub l: D8,
}

#[derive(Serialize)]
pub struct OutboundAccountPosition<'a> {
    pub e: &'static str,
    #[serde(rename = "E")]
    pub event_time: u64,
    pub u: u64,
    #[serde(rename = "B")]
    pub balances: Vec<AssetBalance<'a>>,
}

/// The 2018-era full snapshot (removed by Binance on 2021-01-01; the simulator's legacy mode).
#[derive(Serialize)]
pub struct OutboundAccountInfo<'a> {
    pub e: &'static str,
    #[serde(rename = "E")]
    pub event_time: u64,
    pub m: u32,
    pub t: u32,
    pub b: u32,
    pub s: u32,
    #[serde(rename = "T")]
    pub can_trade: bool,
    #[serde(rename = "W")]
    pub can_withdraw: bool,
    #[serde(rename = "D")]
    pub can_deposit: bool,
    pub u: u64,
    #[serde(rename = "B")]
    pub balances: Vec<AssetBalance<'a>>,
    #[serde(rename = "P")]
    pub permissions: [&'static str; 1],
}

#[derive(Serialize)]
pub struct BalanceUpdate<'a> {
    pub e: &'static str,
    #[serde(rename = "E")]
    pub event_time: u64,
    pub a: &'a str,
    pub d: D8,
    #[serde(rename = "T")]
    pub clear_time: u64,
}

#[derive(Serialize)]
pub struct ListenKeyExpired<'a> {
    pub e: &'static str,
    #[serde(rename = "E")]
    pub event_time: u64,
    #[serde(rename = "listenKey")]
    pub listen_key: &'a str,
}

#[derive(Serialize)]
pub struct BareEvent {
    pub e: &'static str,
    #[serde(rename = "E")]
    pub event_time: u64,
}

#[derive(Serialize, Clone)]
pub struct Ticker24h<'a> {
    pub e: &'static str,
    #[serde(rename = "E")]
    pub event_time: u64,
    pub s: &'a str,
    pub p: D8,
    #[serde(rename = "P")]
    pub pct: String,
    pub w: D8,
    pub x: D8,
    pub c: D8,
    #[serde(rename = "Q")]
    pub last_qty: D8,
    pub b: D8,
    #[serde(rename = "B")]
    pub bid_qty: D8,
    pub a: D8,
    #[serde(rename = "A")]
    pub ask_qty: D8,
    pub o: D8,
    pub h: D8,
    pub l: D8,
    pub v: D8,
    pub q: D8,
    #[serde(rename = "O")]
    pub open_time: u64,
    #[serde(rename = "C")]
    pub close_time: u64,
    #[serde(rename = "F")]
    pub first_id: i64,
    #[serde(rename = "L")]
    pub last_id: i64,
    pub n: u64,
}

#[derive(Serialize)]
pub struct BookTicker<'a> {
    pub u: u64,
    pub s: &'a str,
    pub b: D8,
    #[serde(rename = "B")]
    pub bid_qty: D8,
    pub a: D8,
    #[serde(rename = "A")]
    pub ask_qty: D8,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderAck<'a> {
    pub symbol: &'a str,
    pub order_id: u64,
    pub order_list_id: i64,
    pub client_order_id: &'a str,
    pub transact_time: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderFillJson<'a> {
    pub price: D8,
    pub qty: D8,
    pub commission: D8,
    pub commission_asset: &'a str,
    pub trade_id: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderResult<'a> {
    pub symbol: &'a str,
    pub order_id: u64,
    pub order_list_id: i64,
    pub client_order_id: &'a str,
    pub transact_time: u64,
    pub price: D8,
    pub orig_qty: D8,
    pub executed_qty: D8,
    pub orig_quote_order_qty: D8,
    pub cummulative_quote_qty: D8,
    pub status: &'static str,
    pub time_in_force: &'static str,
    #[serde(rename = "type")]
    pub order_type: &'static str,
    pub side: &'static str,
    pub working_time: u64,
    pub self_trade_prevention_mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fills: Option<Vec<OrderFillJson<'a>>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelResult<'a> {
    pub symbol: &'a str,
    pub orig_client_order_id: &'a str,
    pub order_id: u64,
    pub order_list_id: i64,
    pub client_order_id: &'a str,
    pub transact_time: u64,
    pub price: D8,
    pub orig_qty: D8,
    pub executed_qty: D8,
    pub orig_quote_order_qty: D8,
    pub cummulative_quote_qty: D8,
    pub status: &'static str,
    pub time_in_force: &'static str,
    #[serde(rename = "type")]
    pub order_type: &'static str,
    pub side: &'static str,
    pub self_trade_prevention_mode: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryOrder<'a> {
    pub symbol: &'a str,
    pub order_id: u64,
    pub order_list_id: i64,
    pub client_order_id: &'a str,
    pub price: D8,
    pub orig_qty: D8,
    pub executed_qty: D8,
    pub cummulative_quote_qty: D8,
    pub status: &'static str,
    pub time_in_force: &'static str,
    #[serde(rename = "type")]
    pub order_type: &'static str,
    pub side: &'static str,
    pub stop_price: D8,
    pub iceberg_qty: D8,
    pub time: u64,
    pub update_time: u64,
    pub is_working: bool,
    pub working_time: u64,
    pub orig_quote_order_qty: D8,
    pub self_trade_prevention_mode: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MyTrade<'a> {
    pub symbol: &'a str,
    pub id: u64,
    pub order_id: u64,
    pub order_list_id: i64,
    pub price: D8,
    pub qty: D8,
    pub quote_qty: D8,
    pub commission: D8,
    pub commission_asset: &'a str,
    pub time: u64,
    pub is_buyer: bool,
    pub is_maker: bool,
    pub is_best_match: bool,
}

#[derive(Serialize)]
pub struct CommissionRates {
    pub maker: D8,
    pub taker: D8,
    pub buyer: D8,
    pub seller: D8,
}

#[derive(Serialize)]
pub struct AccountBalanceJson<'a> {
    pub asset: &'a str,
    pub free: D8,
    pub locked: D8,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo<'a> {
    pub maker_commission: u32,
    pub taker_commission: u32,
    pub buyer_commission: u32,
    pub seller_commission: u32,
    pub commission_rates: CommissionRates,
    pub can_trade: bool,
    pub can_withdraw: bool,
    pub can_deposit: bool,
    pub brokered: bool,
    pub require_self_trade_prevention: bool,
    pub prevent_sor: bool,
    pub update_time: u64,
    pub account_type: &'static str,
    pub balances: Vec<AccountBalanceJson<'a>>,
    pub permissions: [&'static str; 1],
    pub uid: u64,
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: i32,
    pub msg: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn decimals_print_like_binance() {
        assert_eq!(fmt8(dec!(0.1)), "0.10000000");
        assert_eq!(fmt8(dec!(60000)), "60000.00000000");
        assert_eq!(fmt8(dec!(0)), "0.00000000");
        assert_eq!(fmt8(dec!(1.123456789)), "1.123456789");
        assert_eq!(fmt8(dec!(-2.5)), "-2.50000000");
    }
}
