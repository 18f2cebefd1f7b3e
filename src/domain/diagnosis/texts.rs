//! The words of a diagnosis in Simplified Chinese and English: money, times, sizes, carrier
//! names, each finding's short label and the summary sentence. Codes and numbers are the same in
//! both languages.

use chrono::{DateTime, Utc};
use chrono_tz::Asia::Shanghai;

use crate::domain::{CarrierId, Fen};

use super::*;

pub(super) fn tr(lang: Lang, zh: String, en: String) -> String {
    match lang {
        Lang::Zh => zh,
        Lang::En => en,
    }
}

pub(super) fn money(lang: Lang, f: Fen) -> String {
    let sign = if f.0 < 0 { "-" } else { "" };
    let a = f.0.unsigned_abs();
    match lang {
        Lang::Zh => format!("{sign}{}.{:02} 元", a / 100, a % 100),
        Lang::En => format!("{sign}{}.{:02} yuan", a / 100, a % 100),
    }
}

pub(super) fn when(t: DateTime<Utc>) -> String {
    t.with_timezone(&Shanghai)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

pub(super) fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

pub(super) fn carrier_name(lang: Lang, c: CarrierId) -> &'static str {
    match (lang, c) {
        (Lang::Zh, CarrierId::Mobile) => "中国移动",
        (Lang::Zh, CarrierId::Unicom) => "中国联通",
        (Lang::Zh, CarrierId::Telecom) => "中国电信",
        (Lang::En, c) => c.display_name(),
    }
}

/// A finding's short name for a sentence a customer reads.
fn label(lang: Lang, code: &str) -> &'static str {
    match (code, lang) {
        ("EXPIRED_IN_RETENTION", Lang::Zh) => "套餐到期（停机保号）",
        ("EXPIRED_IN_RETENTION", Lang::En) => "expired plan",
        ("RESTORE_PENDING_AFTER_RENEWAL", Lang::Zh) => "续费后等待复机",
        ("RESTORE_PENDING_AFTER_RENEWAL", Lang::En) => "restore pending after renewal",
        ("ARREARS", Lang::Zh) => "欠费",
        ("ARREARS", Lang::En) => "arrears",
        ("REAL_NAME_MISSING", Lang::Zh) => "未实名认证",
        ("REAL_NAME_MISSING", Lang::En) => "missing real-name verification",
        ("DEVICE_MISMATCH", Lang::Zh) => "机卡分离",
        ("DEVICE_MISMATCH", Lang::En) => "card/device separation",
        ("OVER_QUOTA", Lang::Zh) => "流量超量",
        ("OVER_QUOTA", Lang::En) => "data quota used up",
        ("POOL_EXHAUSTED", Lang::Zh) => "流量池用完",
        ("POOL_EXHAUSTED", Lang::En) => "data pool used up",
        ("TEST_GIFT_USED_UP", Lang::Zh) => "测试流量用完",
        ("TEST_GIFT_USED_UP", Lang::En) => "test gift used up",
        ("MANUAL_STOP", Lang::Zh) => "人工停机",
        ("MANUAL_STOP", Lang::En) => "manual stop",
        (_, Lang::Zh) => "其他原因",
        (_, Lang::En) => "other",
    }
}

pub(super) fn summary(
    ctx: &Ctx<'_>,
    verdict: Verdict,
    blocking: &[&'static str],
    total: usize,
) -> String {
    let lang = ctx.lang;
    match verdict {
        // Their first finding says it best.
        Verdict::Cancelled | Verdict::ChangePending | Verdict::CarrierStateDiffers => String::new(),
        Verdict::OnlineOk => tr(
            lang,
            format!("卡状态正常，可以上网。{}", if total > 0 { format!("有 {total} 条提醒。") } else { String::new() }),
            format!("The card is in service and online.{}", if total > 0 { format!(" {total} warning(s) below.") } else { String::new() }),
        ),
        Verdict::LikelyNetworkOrDevice => tr(
            lang,
            "账户没有问题，卡未停机；请按以下步骤排查网络和设备。".to_string(),
            "Nothing on the account stops this card; work through the network and device checks below.".to_string(),
        ),
        Verdict::BlockedByAccount => {
            let order = blocking
                .iter()
                .map(|c| label(lang, c))
                .collect::<Vec<_>>()
                .join(" → ");
            let why = if blocking.first() == Some(&"EXPIRED_IN_RETENTION") && blocking.len() > 1 {
                tr(lang, "先续费：不续费号码会被注销，单独充值也不能让过期的卡复机。".to_string(), "Renew first: without it the number is cancelled, and no recharge restores an expired card.".to_string())
            } else if blocking.first() == Some(&"ARREARS") && blocking.len() > 1 {
                tr(lang, "先还清欠款：欠费期间其他处理都不能让卡复机。".to_string(), "Pay the arrears first: while they are owed nothing else brings the card back.".to_string())
            } else {
                String::new()
            };
            tr(
                lang,
                format!("卡因 {} 项原因停机，需按顺序处理：{order}。{why}", blocking.len()),
                format!("{} thing(s) stop this card; clear them in this order: {order}. {why}", blocking.len()),
            )
        }
    }
}
