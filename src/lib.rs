//! catena
