//! Safety MCU firmware for the Raspberry Pi Pico (RP2040).
//!
//! All decisions are `fwbridge-logic`'s (tested on the host); this file only wires pins and
//! the UART to it. Static allocation only: the UART buffers live in `static_cell`s, the
//! decoder and the state machine on the stack of the single task.
//!
//! Pins (see `../README.md`): GP0 UART0 TX → companion RX, GP1 UART0 RX ← companion TX,
//! GP15 e-stop input (normally-closed switch to GND, internal pull-up: low = circuit
//! closed), GP16 safety output (high = asserted), GP25 on-board LED (mirrors the output).
#![no_std]
#![no_main]

use embassy_executor::Spawner;
use embassy_futures::select::{Either, select};
use embassy_rp::bind_interrupts;
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::peripherals::UART0;
use embassy_rp::uart::{BufferedInterruptHandler, BufferedUart, Config as UartConfig};
use embassy_time::{Duration, Instant, Ticker};
use embedded_io_async::{Read, Write};
use fwbridge_logic::{Config, Mcu};
use fwbridge_protocol::{FrameDecoder, MAX_FRAME_LEN, OutputState, encode_into};
use panic_halt as _;
use static_cell::StaticCell;

bind_interrupts!(struct Irqs {
    UART0_IRQ => BufferedInterruptHandler<UART0>;
});

/// The input is sampled, and the logic run, every millisecond.
const TICK: Duration = Duration::from_millis(1);

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let p = embassy_rp::init(Default::default());

    // Safe state first: output released until the logic says otherwise, then driven every tick.
    let mut output = Output::new(p.PIN_16, Level::Low);
    let mut led = Output::new(p.PIN_25, Level::Low);
    // Normally closed to GND with a pull-up: a pressed switch or a cut wire reads high.
    let estop = Input::new(p.PIN_15, Pull::Up);

    static TX_BUF: StaticCell<[u8; 256]> = StaticCell::new();
    static RX_BUF: StaticCell<[u8; 256]> = StaticCell::new();
    let mut config = UartConfig::default();
    config.baudrate = 115_200;
    let uart = BufferedUart::new(
        p.UART0,
        p.PIN_0,
        p.PIN_1,
        Irqs,
        TX_BUF.init([0; 256]),
        RX_BUF.init([0; 256]),
        config,
    );
    let (mut tx, mut rx) = uart.split();

    let now_ms = || Instant::now().as_millis();
    let mut mcu = Mcu::new(Config::default(), now_ms());
    let mut decoder = FrameDecoder::new();
    let mut ticker = Ticker::every(TICK);
    let mut buf = [0u8; 64];
    let mut frame = [0u8; MAX_FRAME_LEN];
    loop {
        match select(rx.read(&mut buf), ticker.next()).await {
            Either::First(Ok(n)) => {
                for result in decoder.feed(buf.get(..n).unwrap_or_default()) {
                    match result {
                        Ok(message) => mcu.handle_message(now_ms(), &message),
                        Err(_) => mcu.handle_frame_error(),
                    }
                }
            }
            // A UART error (framing, overrun, break) loses bytes; the decoder resynchronises.
            Either::First(Err(_)) => mcu.handle_frame_error(),
            Either::Second(()) => {}
        }
        let now = now_ms();
        mcu.handle_switch(now, estop.is_low());
        let asserted = mcu.output() == OutputState::Asserted;
        output.set_level(Level::from(asserted));
        led.set_level(Level::from(asserted));
        while let Some(message) = mcu.poll_transmit(now) {
            if let Ok(n) = encode_into(&message, &mut frame) {
                // A companion that stopped reading fills the buffer; the write then waits,
                // but the output was already driven above and is driven again next tick.
                let _ = tx.write_all(frame.get(..n).unwrap_or_default()).await;
            }
        }
    }
}
