//! Building the in-band `apache.rocketmq.v2.Status` every response carries.

use crate::v2::{Code, Status};

/// A status with the given code and message.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code as i32,
        message: message.into(),
    }
}

/// `{OK, "OK"}`, the status of every successful response.
pub fn ok() -> Status {
    status(Code::Ok, "OK")
}

/// The code of a status, or `Unspecified` when the number is unknown.
pub fn code_of(status: &Status) -> Code {
    Code::try_from(status.code).unwrap_or(Code::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        let s = status(Code::TopicNotFound, "no topic t");
        assert_eq!(s.code, 40402);
        assert_eq!(code_of(&s), Code::TopicNotFound);
        assert_eq!(
            code_of(&Status {
                code: 12345,
                message: String::new()
            }),
            Code::Unspecified
        );
        assert_eq!(ok().code, 20000);
    }
}
