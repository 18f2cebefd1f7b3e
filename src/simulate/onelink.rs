//! The onelink wire simulator. (Skeleton: the helper for this carrier fills it in.)
